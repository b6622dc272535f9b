//! Broker URLs as operators write them in config files: `mqtt://host:port` and
//! `mqtts://host:port`.
//!
//! Invariant: the port defaults to the scheme's IANA port (1883, 8883); an IPv6 host may
//! be written in brackets, which are dropped; anything else is refused with a reason that
//! config errors can quote after the file and line.

/// Why a broker URL was refused. The messages are read by operators after
/// `file:line: mqtt.url '...': `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerUrlError {
    /// Neither `mqtt://` nor `mqtts://`.
    #[error("must start with mqtt:// or mqtts://")]
    Scheme,
    /// The port is not a `u16`.
    #[error("port '{0}' is not a number from 1 to 65535")]
    Port(String),
    /// Nothing before the port, or nothing at all.
    #[error("host is missing")]
    Host,
    /// `mqtts://` where only plain MQTT is spoken.
    #[error("TLS (mqtts://) is not supported here; use mqtt://")]
    TlsUnsupported,
}

/// `mqtt://host:port` (port 1883 if left out): host and port. Plain MQTT only; see
/// [`parse_broker_url`] for `mqtts://`.
pub fn parse_mqtt_url(url: &str) -> Result<(String, u16), BrokerUrlError> {
    match parse_broker_url(url)? {
        (host, port, false) => Ok((host, port)),
        (_, _, true) => Err(BrokerUrlError::TlsUnsupported),
    }
}

/// `mqtt://host:port` (port 1883 if left out) or `mqtts://host:port` (TLS, port 8883);
/// returns host, port and whether TLS is on.
pub fn parse_broker_url(url: &str) -> Result<(String, u16, bool), BrokerUrlError> {
    let (rest, tls, default_port) = if let Some(r) = url.strip_prefix("mqtts://") {
        (r, true, 8883)
    } else if let Some(r) = url.strip_prefix("mqtt://") {
        (r, false, 1883)
    } else {
        return Err(BrokerUrlError::Scheme);
    };
    let rest = rest.trim_end_matches('/');
    match rest.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => {
            let port = port.parse::<u16>().map_err(|_| BrokerUrlError::Port(port.to_string()))?;
            Ok((host.trim_matches(['[', ']']).to_string(), port, tls))
        }
        None if !rest.is_empty() => Ok((rest.to_string(), default_port, tls)),
        _ => Err(BrokerUrlError::Host),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_urls_are_checked() {
        assert_eq!(parse_mqtt_url("mqtt://broker:1884"), Ok(("broker".into(), 1884)));
        assert_eq!(parse_broker_url("mqtt://broker"), Ok(("broker".into(), 1883, false)));
        assert_eq!(parse_broker_url("mqtts://broker"), Ok(("broker".into(), 8883, true)));
        assert!(parse_mqtt_url("http://broker").is_err());
        assert!(parse_mqtt_url("mqtt://broker:x").is_err());
    }

    #[test]
    fn refusals_say_what_is_wrong_in_the_words_config_errors_quote() {
        assert_eq!(parse_mqtt_url("http://broker").unwrap_err().to_string(), "must start with mqtt:// or mqtts://");
        assert_eq!(
            parse_mqtt_url("mqtt://broker:x").unwrap_err().to_string(),
            "port 'x' is not a number from 1 to 65535"
        );
        assert_eq!(parse_broker_url("mqtt://:1883").unwrap_err(), BrokerUrlError::Host);
        assert_eq!(parse_mqtt_url("mqtts://broker"), Err(BrokerUrlError::TlsUnsupported));
        assert_eq!(parse_broker_url("mqtt://[::1]:1884"), Ok(("::1".into(), 1884, false)));
    }
}

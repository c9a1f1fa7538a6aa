//! `amqp[s]://USER:PASSWORD@HOST:PORT/VHOST?exchange=NAME&routing_key=TEMPLATE[&…]` and the
//! options of the AMQP sink, from the URI query or a config file.

use lapin::ExchangeKind;
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use sink_core::{parse_duration, uri};
use std::path::PathBuf;
use std::time::Duration;

/// How events are carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Binary,
    Structured,
}

/// What to do about the exchange at start.
#[derive(Debug, Clone)]
pub enum Declare {
    /// Check that it exists (the default).
    Passive,
    /// Declare it with this type (and `durable`).
    Kind(ExchangeKind),
    /// Nothing: a missing exchange shows up as failed publishes.
    None,
}

#[derive(Debug, Clone)]
pub struct AmqpOptions {
    pub exchange: String,
    pub routing_key: String,
    pub mode: Mode,
    pub declare: Declare,
    pub durable: bool,
    pub header_prefix: String,
    pub connect_timeout: Duration,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl Default for AmqpOptions {
    fn default() -> Self {
        Self {
            exchange: String::new(),
            routing_key: "{type}".to_owned(),
            mode: Mode::Binary,
            declare: Declare::Passive,
            durable: true,
            header_prefix: "ce-".to_owned(),
            connect_timeout: Duration::from_secs(10),
            ca_file: None,
            cert_file: None,
            key_file: None,
        }
    }
}

/// Options the sink reads itself; `password_file` is read while parsing.
pub const KEYS: [&str; 12] = [
    "exchange",
    "routing_key",
    "mode",
    "declare",
    "durable",
    "header_prefix",
    "connect_timeout",
    "password_file",
    "ca_file",
    "cert_file",
    "key_file",
    "name",
];

impl AmqpOptions {
    /// Applies one option; `Ok(false)` when the key is not an AMQP sink option.
    fn set(&mut self, key: &str, value: &str) -> Result<bool, String> {
        match key {
            "exchange" => self.exchange = value.to_owned(),
            "routing_key" => self.routing_key = value.to_owned(),
            "mode" => {
                self.mode = match value {
                    "binary" => Mode::Binary,
                    "structured" => Mode::Structured,
                    other => {
                        return Err(format!("mode: {other:?} is not one of binary, structured"));
                    }
                }
            }
            "declare" => {
                self.declare = match value {
                    "passive" => Declare::Passive,
                    "none" => Declare::None,
                    "topic" => Declare::Kind(ExchangeKind::Topic),
                    "direct" => Declare::Kind(ExchangeKind::Direct),
                    "fanout" => Declare::Kind(ExchangeKind::Fanout),
                    "headers" => Declare::Kind(ExchangeKind::Headers),
                    other => {
                        return Err(format!(
                            "declare: {other:?} is not one of passive, none, topic, direct, \
                             fanout, headers"
                        ));
                    }
                }
            }
            "durable" => {
                self.durable = match value {
                    "true" | "1" | "yes" => true,
                    "false" | "0" | "no" => false,
                    other => return Err(format!("durable: {other:?} is not true or false")),
                }
            }
            "header_prefix" => {
                if !["ce-", "ce_", "cloudEvents_", "cloudEvents:"].contains(&value) {
                    return Err(format!(
                        "header_prefix: {value:?} is not one of ce-, ce_, cloudEvents_, cloudEvents:"
                    ));
                }
                self.header_prefix = value.to_owned();
            }
            "connect_timeout" => {
                self.connect_timeout = parse_duration(value)
                    .ok()
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| {
                        format!("connect_timeout: {value:?} is not a duration above zero")
                    })?
            }
            "ca_file" => self.ca_file = Some(PathBuf::from(value)),
            "cert_file" => self.cert_file = Some(PathBuf::from(value)),
            "key_file" => self.key_file = Some(PathBuf::from(value)),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The TLS settings for a private CA or a client certificate, if any.
    pub fn tls_config(&self) -> Result<Option<OwnedTLSConfig>, String> {
        if self.ca_file.is_none() && self.cert_file.is_none() {
            return Ok(None);
        }
        let read = |what: &str, path: &PathBuf| {
            std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))
        };
        let cert_chain = match &self.ca_file {
            Some(path) => Some(
                String::from_utf8(read("ca_file", path)?)
                    .map_err(|_| format!("ca_file {}: not PEM", path.display()))?,
            ),
            None => None,
        };
        let identity = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => Some(OwnedIdentity::PKCS8 {
                pem: read("cert_file", cert)?,
                key: read("key_file", key)?,
            }),
            (None, None) => None,
            _ => return Err("cert_file and key_file go together".to_owned()),
        };
        Ok(Some(OwnedTLSConfig {
            identity,
            cert_chain,
        }))
    }
}

/// Takes the sink's options out of the URI; returns the URI for the client library (credentials,
/// host, vhost and its own query parameters such as `heartbeat`) and the options.
pub fn parse(
    uri: &str,
    given: Option<&[(String, String)]>,
) -> Result<(String, AmqpOptions), String> {
    parse_reading(uri, given, true)
}

/// [`parse`]; `read_files: false` leaves `password_file` unread (a description of the sink
/// needs the options, not the password).
pub fn parse_reading(
    uri: &str,
    given: Option<&[(String, String)]>,
    read_files: bool,
) -> Result<(String, AmqpOptions), String> {
    if !(uri.starts_with("amqp://") || uri.starts_with("amqps://")) {
        return Err("expected amqp://USER:PASSWORD@HOST:PORT/VHOST?exchange=…".to_owned());
    }
    let (base, query) = match uri.split_once('?') {
        Some((base, query)) => (base.to_owned(), query),
        None => (uri.to_owned(), ""),
    };
    let mut options = AmqpOptions::default();
    let mut password_file = None;
    let mut kept = Vec::new();
    let mut apply = |key: &str, value: &str, raw: Option<&str>| -> Result<(), String> {
        if key == "password_file" {
            password_file = Some(PathBuf::from(value));
            return Ok(());
        }
        if !options.set(key, value)? {
            if let Some(raw) = raw {
                // The client library's own query parameters (heartbeat, frame_max, …), as written.
                kept.push(raw.to_owned());
            } else {
                return Err(format!(
                    "unknown option {key:?}; known: {}",
                    KEYS.join(", ")
                ));
            }
        }
        Ok(())
    };
    for param in uri::params(query)? {
        apply(param.key, &param.value, Some(param.raw))?;
    }
    for (key, value) in given.unwrap_or_default() {
        apply(key, value, None)?;
    }
    let mut base = base;
    if let Some(path) = password_file.filter(|_| read_files) {
        let password = std::fs::read_to_string(&path)
            .map_err(|e| format!("password_file {}: {e}", path.display()))?;
        let encoded: String = percent_encoding::utf8_percent_encode(
            password.trim(),
            percent_encoding::NON_ALPHANUMERIC,
        )
        .to_string();
        let (scheme, rest) = base.split_once("://").unwrap_or(("amqp", &base));
        let (userinfo, host) = rest.split_once('@').ok_or_else(|| {
            "password_file needs a user in the URI: amqp://USER@HOST/…".to_owned()
        })?;
        let user = userinfo.split(':').next().unwrap_or(userinfo);
        base = format!("{scheme}://{user}:{encoded}@{host}");
    }
    let kept: Vec<&str> = kept.iter().map(String::as_str).collect();
    let uri = uri::with_query(&base, &kept);
    Ok((uri, options))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_leave_the_uri_and_client_parameters_stay() {
        let (uri, o) = parse(
            "amqp://u:p@rabbit:5672/%2f?exchange=kfp&routing_key=kfp.{namespace}.{type}&heartbeat=30&mode=structured&declare=topic",
            None,
        )
        .expect("parses");
        assert_eq!(uri, "amqp://u:p@rabbit:5672/%2f?heartbeat=30");
        assert_eq!(o.exchange, "kfp");
        assert_eq!(o.routing_key, "kfp.{namespace}.{type}");
        assert_eq!(o.mode, Mode::Structured);
        assert!(matches!(o.declare, Declare::Kind(ExchangeKind::Topic)));
    }

    #[test]
    fn mistakes_name_the_field() {
        for (uri, want) in [
            ("amqp://h/?mode=batch", "mode:"),
            ("amqp://h/?declare=maybe", "declare:"),
            ("amqp://h/?header_prefix=x-", "header_prefix:"),
            ("amqp://h/?durable=perhaps", "durable:"),
            ("http://h/", "expected amqp://"),
            ("amqp://h/?password_file=/nonexistent", "password_file"),
        ] {
            let err = parse(uri, None).expect_err(uri);
            assert!(err.contains(want), "{uri}: {err}");
        }
        let err = parse("amqp://h/", Some(&[("nope".into(), "1".into())])).expect_err("unknown");
        assert!(err.contains("unknown option \"nope\""), "{err}");
    }
}

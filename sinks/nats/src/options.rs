//! `nats://[user:password@|token@]HOST:PORT[,HOST:PORT…]/SUBJECT_TEMPLATE[?options]` and the
//! options of the NATS sink, from the URI query or a config file.

use async_nats::ConnectOptions;
use sink_core::{parse_duration, uri};
use std::path::PathBuf;
use std::time::Duration;

/// How events are carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Structured,
    Binary,
}

#[derive(Debug, Clone)]
pub struct NatsOptions {
    pub jetstream: bool,
    pub mode: Mode,
    /// The stream JetStream publishes must land in (checked at start, sent as expected stream).
    pub stream: Option<String>,
    pub ack_timeout: Duration,
    pub max_ack_inflight: usize,
    pub connect_timeout: Duration,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    pub creds_file: Option<PathBuf>,
    pub nkey_file: Option<PathBuf>,
    pub tls: bool,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl Default for NatsOptions {
    fn default() -> Self {
        Self {
            jetstream: true,
            mode: Mode::Structured,
            stream: None,
            ack_timeout: Duration::from_secs(5),
            max_ack_inflight: 4096,
            connect_timeout: Duration::from_secs(5),
            user: None,
            password: None,
            token: None,
            token_file: None,
            creds_file: None,
            nkey_file: None,
            tls: false,
            ca_file: None,
            cert_file: None,
            key_file: None,
        }
    }
}

/// A parsed `nats://` URI.
pub struct Target {
    pub servers: Vec<String>,
    pub subject: String,
    pub options: NatsOptions,
}

impl NatsOptions {
    pub const KEYS: [&'static str; 13] = [
        "jetstream",
        "mode",
        "stream",
        "ack_timeout",
        "max_ack_inflight",
        "connect_timeout",
        "token_file",
        "creds_file",
        "nkey_file",
        "tls",
        "ca_file",
        "cert_file",
        "key_file",
    ];

    /// Applies one option; `Ok(false)` when the key is not a NATS sink option.
    pub fn set(&mut self, key: &str, value: &str) -> Result<bool, String> {
        let flag = |v: &str| match v {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" => Ok(false),
            other => Err(format!("{key}: {other:?} is not true or false")),
        };
        let duration = |v: &str| {
            parse_duration(v)
                .map_err(|m| format!("{key}: {m}"))
                .and_then(|d| {
                    if d.is_zero() {
                        Err(format!("{key}: must be above zero"))
                    } else {
                        Ok(d)
                    }
                })
        };
        match key {
            "jetstream" => self.jetstream = flag(value)?,
            "tls" => self.tls = flag(value)?,
            "mode" => {
                self.mode = match value {
                    "structured" => Mode::Structured,
                    "binary" => Mode::Binary,
                    other => {
                        return Err(format!("mode: {other:?} is not one of structured, binary"));
                    }
                }
            }
            "stream" if !value.is_empty() => self.stream = Some(value.to_owned()),
            "stream" => return Err("stream: must not be empty".to_owned()),
            "ack_timeout" => self.ack_timeout = duration(value)?,
            "connect_timeout" => self.connect_timeout = duration(value)?,
            "max_ack_inflight" => {
                self.max_ack_inflight =
                    value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| {
                            format!("max_ack_inflight: {value:?} is not a positive integer")
                        })?
            }
            "token_file" => self.token_file = Some(PathBuf::from(value)),
            "creds_file" => self.creds_file = Some(PathBuf::from(value)),
            "nkey_file" => self.nkey_file = Some(PathBuf::from(value)),
            "ca_file" => self.ca_file = Some(PathBuf::from(value)),
            "cert_file" => self.cert_file = Some(PathBuf::from(value)),
            "key_file" => self.key_file = Some(PathBuf::from(value)),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Connection options with the credentials and TLS settings; secrets are read from their
    /// files here and never logged.
    pub async fn connect_options(&self) -> Result<ConnectOptions, String> {
        let mut options = ConnectOptions::new().connection_timeout(self.connect_timeout);
        let read = |what: &str, path: &PathBuf| {
            std::fs::read_to_string(path)
                .map(|s| s.trim().to_owned())
                .map_err(|e| format!("{what} {}: {e}", path.display()))
        };
        if let Some(path) = &self.creds_file {
            options = options
                .credentials_file(path)
                .await
                .map_err(|e| format!("creds_file {}: {e}", path.display()))?;
        }
        if let Some(path) = &self.nkey_file {
            options = options.nkey(read("nkey_file", path)?);
        }
        if let Some(path) = &self.token_file {
            options = options.token(read("token_file", path)?);
        } else if let Some(token) = &self.token {
            options = options.token(token.clone());
        }
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            options = options.user_and_password(user.clone(), password.clone());
        }
        if self.tls || self.ca_file.is_some() || self.cert_file.is_some() {
            options = options.require_tls(true);
        }
        if let Some(path) = &self.ca_file {
            if !path.is_file() {
                return Err(format!("ca_file {}: not a file", path.display()));
            }
            options = options.add_root_certificates(path.clone());
        }
        match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => {
                options = options.add_client_certificate(cert.clone(), key.clone());
            }
            (None, None) => {}
            _ => return Err("cert_file and key_file go together".to_owned()),
        }
        Ok(options)
    }
}

/// Splits a sink URI into servers, subject template and options.
pub fn parse(uri: &str, given: Option<&[(String, String)]>) -> Result<Target, String> {
    let (scheme, rest) = uri
        .split_once("://")
        .ok_or_else(|| "expected nats://HOST:PORT/SUBJECT".to_owned())?;
    let mut options = NatsOptions::default();
    match scheme {
        "nats" => {}
        "tls" => options.tls = true,
        other => {
            return Err(format!(
                "unsupported scheme {other:?}; use nats:// or tls://"
            ));
        }
    }
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (rest, None),
    };
    let (authority, subject) = rest
        .split_once('/')
        .ok_or_else(|| "missing subject: nats://HOST:PORT/SUBJECT".to_owned())?;
    if subject.is_empty() {
        return Err("missing subject: nats://HOST:PORT/SUBJECT".to_owned());
    }
    let hosts = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            match userinfo.split_once(':') {
                Some((user, password)) => {
                    options.user = Some(uri::decode(user)?);
                    options.password = Some(uri::decode(password)?);
                }
                None => options.token = Some(uri::decode(userinfo)?),
            }
            hosts
        }
        None => authority,
    };
    let servers: Vec<String> = hosts
        .split(',')
        .map(|h| format!("{scheme}://{}", h.trim()))
        .collect();
    if hosts.trim().is_empty() || servers.iter().any(|s| s.ends_with("://")) {
        return Err("missing server: nats://HOST:PORT/SUBJECT".to_owned());
    }
    for server in &servers {
        server
            .parse::<async_nats::ServerAddr>()
            .map_err(|e| format!("server {:?}: {e}", sink_core::redact(server)))?;
    }
    // Options from the URI query, then those given separately (a config file); all must be known.
    let query = uri::params(query.unwrap_or(""))?;
    let from_query = query.iter().map(|p| (p.key, p.value.as_str()));
    let given = given
        .unwrap_or_default()
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()));
    for (key, value) in from_query.chain(given) {
        if !options.set(key, value)? {
            return Err(format!(
                "unknown option {key:?}; known: {}",
                NatsOptions::KEYS.join(", ")
            ));
        }
    }
    Ok(Target {
        servers,
        subject: uri::decode(subject)?,
        options,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_split_into_servers_subject_and_options() {
        let t = parse(
            "nats://alice:s%40cret@n1:4222,n2:4222/kfp.{namespace}.{type}?jetstream=false&mode=binary",
            None,
        )
        .expect("parses");
        assert_eq!(t.servers, ["nats://n1:4222", "nats://n2:4222"]);
        assert_eq!(t.subject, "kfp.{namespace}.{type}");
        assert_eq!(t.options.user.as_deref(), Some("alice"));
        assert_eq!(t.options.password.as_deref(), Some("s@cret"));
        assert!(!t.options.jetstream);
        assert_eq!(t.options.mode, Mode::Binary);
        let t = parse("tls://tok@n1:4222/kfp", None).expect("parses");
        assert!(t.options.tls);
        assert_eq!(t.options.token.as_deref(), Some("tok"));
    }

    #[test]
    fn mistakes_name_the_field() {
        for (uri, want) in [
            ("nats://n1:4222", "missing subject"),
            ("nats://n1:4222/", "missing subject"),
            ("nats:///kfp", "missing server"),
            ("nats://n1/kfp?jetstream=maybe", "jetstream:"),
            ("nats://n1/kfp?mode=batch", "mode:"),
            ("nats://n1/kfp?nope=1", "unknown option \"nope\""),
            ("http://n1/kfp", "unsupported scheme"),
        ] {
            let err = parse(uri, None).err().expect(uri);
            assert!(err.contains(want), "{uri}: {err}");
        }
    }
}

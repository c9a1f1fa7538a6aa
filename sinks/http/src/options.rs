//! The HTTP sink's options, from the URI query (`?mode=structured&header=X-Team:a`) or a config file.

use sink_core::{parse_duration, uri};
use std::path::PathBuf;
use std::time::Duration;

/// How events are carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Binary,
    Structured,
    Batch,
}

#[derive(Debug, Clone)]
pub struct HttpOptions {
    pub mode: Mode,
    /// Extra request headers, `Name: value`.
    pub headers: Vec<(String, String)>,
    /// Whole-request timeout.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// A bearer token file, re-read when it changes (projected service-account or OIDC tokens).
    pub token_file: Option<PathBuf>,
    /// PEM CA bundle trusted in addition to the system roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub batch_max_events: usize,
    pub batch_max_bytes: usize,
    pub batch_linger: Duration,
    pub pool_max_idle: usize,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            mode: Mode::Binary,
            headers: Vec::new(),
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            token_file: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            batch_max_events: 100,
            batch_max_bytes: 1 << 20,
            batch_linger: Duration::from_millis(50),
            pool_max_idle: 64,
        }
    }
}

impl HttpOptions {
    pub const KEYS: [&'static str; 12] = [
        "mode",
        "header",
        "timeout",
        "connect_timeout",
        "token_file",
        "ca_file",
        "cert_file",
        "key_file",
        "batch_max_events",
        "batch_max_bytes",
        "batch_linger",
        "pool_max_idle",
    ];

    /// Applies one option; `Ok(false)` when the key is not an HTTP sink option.
    pub fn set(&mut self, key: &str, value: &str) -> Result<bool, String> {
        let positive = |v: &str| -> Result<usize, String> {
            v.parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{key}: {v:?} is not a positive integer"))
        };
        let duration = |v: &str| parse_duration(v).map_err(|m| format!("{key}: {m}"));
        match key {
            "mode" => {
                self.mode = match value {
                    "binary" => Mode::Binary,
                    "structured" => Mode::Structured,
                    "batch" => Mode::Batch,
                    other => {
                        return Err(format!(
                            "mode: {other:?} is not one of binary, structured, batch"
                        ));
                    }
                }
            }
            "header" => {
                let (name, v) = value
                    .split_once(':')
                    .ok_or_else(|| format!("header: {value:?} is not Name:value"))?;
                self.headers
                    .push((name.trim().to_owned(), v.trim().to_owned()));
            }
            "timeout" => self.timeout = duration(value)?,
            "connect_timeout" => self.connect_timeout = duration(value)?,
            "token_file" => self.token_file = Some(PathBuf::from(value)),
            "ca_file" => self.ca_file = Some(PathBuf::from(value)),
            "cert_file" => self.cert_file = Some(PathBuf::from(value)),
            "key_file" => self.key_file = Some(PathBuf::from(value)),
            "batch_max_events" => self.batch_max_events = positive(value)?,
            "batch_max_bytes" => self.batch_max_bytes = positive(value)?,
            "batch_linger" => self.batch_linger = duration(value)?,
            "pool_max_idle" => self.pool_max_idle = positive(value)?,
            _ => return Ok(false),
        }
        if self.timeout.is_zero() {
            return Err("timeout: must be above zero".to_owned());
        }
        Ok(true)
    }

    /// Takes the known options out of `uri`'s query; returns the URI with the rest of the query.
    pub fn take_from_query(&mut self, uri: &str) -> Result<String, String> {
        let Some((base, query)) = uri.split_once('?') else {
            return Ok(uri.to_owned());
        };
        let (query, fragment) = match query.split_once('#') {
            Some((q, f)) => (q, Some(f)),
            None => (query, None),
        };
        let mut kept = Vec::new();
        for param in uri::params(query)? {
            if !self.set(param.key, &param.value)? {
                kept.push(param.raw);
            }
        }
        let mut out = uri::with_query(base, &kept);
        if let Some(fragment) = fragment {
            out.push('#');
            out.push_str(fragment);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_query_options_are_taken_the_rest_stays() {
        let mut o = HttpOptions::default();
        let url = o
            .take_from_query("http://h/p?mode=structured&code=abc&header=X-Team:%20a&timeout=2s")
            .expect("parses");
        assert_eq!(url, "http://h/p?code=abc");
        assert_eq!(o.mode, Mode::Structured);
        assert_eq!(o.headers, [("X-Team".to_owned(), "a".to_owned())]);
        assert_eq!(o.timeout, Duration::from_secs(2));
    }

    #[test]
    fn bad_values_name_the_option() {
        let mut o = HttpOptions::default();
        assert!(o.set("mode", "fast").expect_err("bad").starts_with("mode:"));
        assert!(
            o.set("timeout", "soon")
                .expect_err("bad")
                .starts_with("timeout:")
        );
        assert!(
            o.set("timeout", "0s")
                .expect_err("zero")
                .starts_with("timeout:")
        );
        assert!(
            o.set("batch_max_events", "0")
                .expect_err("zero")
                .starts_with("batch_max_events:")
        );
        assert_eq!(o.set("nope", "1"), Ok(false));
    }
}

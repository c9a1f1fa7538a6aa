//! The HTTP sink: CloudEvents over HTTP POST, as Knative and webhook receivers expect.
//!
//! - **binary** (default): `ce-` headers, percent-encoded per the HTTP binding §3.1.3.2;
//!   `Content-Type` from `datacontenttype`; the body is the data — what kfp-event-handler's
//!   subscribers already read.
//! - **structured**: the JSON event format as the body (`application/cloudevents+json`).
//! - **batch**: `application/cloudevents-batch+json` arrays, bounded by count, bytes and linger.
//!
//! Any 2xx is delivered. 404, 408, 409, 429, 5xx and transport errors are transient (with
//! `Retry-After` passed on); 3xx (never followed), 410 and other 4xx are permanent.

mod options;
mod token;

pub use options::{HttpOptions, Mode};

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use sink_core::redact_with;
use sink_core::template::Template;
use sink_core::{Accepting, Event, KeyOrder, Receipt, Sink, SinkError, binary, structured};
use std::sync::Arc;
use std::time::Duration;
use token::TokenFile;
use tokio::sync::{mpsc, oneshot};

/// What a template value may not carry unescaped into a URL path segment.
const PATH_SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'\\');

/// Longest slice of an error response body quoted in the error message.
const BODY_EXCERPT: usize = 200;

enum Target {
    Fixed(Url),
    Template(Template),
}

/// One HTTP endpoint.
pub struct HttpSink {
    /// The name, client, extra headers and token every request shares; built once.
    poster: Arc<Poster>,
    target: Target,
    mode: Mode,
    batches: Option<mpsc::Sender<Batched>>,
    /// Host and port the health check connects to, when the host is not templated.
    reach: Option<(String, u16)>,
}

type Batched = (Vec<u8>, oneshot::Sender<Result<(), SinkError>>);

impl HttpSink {
    /// Opens the sink `uri` names. `options` given separately (a config file) must all be known;
    /// without them, known options are taken from the URI query and the rest stay in the URL.
    /// `extra_ca_pem` is trusted in addition to the system roots (Knative's `K_CA_CERTS`).
    /// Batch mode spawns its batching task, so call this inside a tokio runtime.
    pub fn open(
        uri: &str,
        name: Option<&str>,
        options: Option<&[(String, String)]>,
        extra_ca_pem: Option<&str>,
    ) -> Result<Self, SinkError> {
        let display = name
            .map(str::to_owned)
            .unwrap_or_else(|| redact_with(uri, SHOWN_OPTIONS));
        let err = |message: String| SinkError::config(&display, message);
        let mut opts = HttpOptions::default();
        let url = match options {
            Some(pairs) => {
                for (key, value) in pairs {
                    if !opts.set(key, value).map_err(&err)? {
                        return Err(err(format!(
                            "unknown option {key:?}; known: {}",
                            HttpOptions::KEYS.join(", ")
                        )));
                    }
                }
                uri.to_owned()
            }
            None => opts.take_from_query(uri).map_err(&err)?,
        };
        let template = Template::parse(&url).map_err(|e| err(e.to_string()))?;
        let target = if template.is_constant() {
            Target::Fixed(parse_url(&url).map_err(&err)?)
        } else {
            // Check the template yields a valid URL for a sample value.
            parse_url(&template.render_sample(|_, _, out| out.push('x'))).map_err(&err)?;
            if opts.mode == Mode::Batch {
                return Err(err(
                    "batch mode needs a fixed URL (no {…} template)".to_owned()
                ));
            }
            Target::Template(template)
        };
        let reach = reach(&url, &target);
        let client = build_client(&opts, extra_ca_pem).map_err(&err)?;
        let mut headers = HeaderMap::new();
        for (k, v) in &opts.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| err(format!("header: {k:?} is not a valid header name")))?;
            let value = HeaderValue::from_str(v)
                .map_err(|_| err(format!("header {k}: value is not a valid header value")))?;
            headers.append(name, value);
        }
        let token = match &opts.token_file {
            Some(path) => Some(Arc::new(TokenFile::open(path).map_err(&err)?)),
            None => None,
        };
        let mut sink = Self {
            poster: Arc::new(Poster {
                name: display,
                client,
                headers,
                token,
            }),
            target,
            mode: opts.mode,
            batches: None,
            reach,
        };
        if opts.mode == Mode::Batch {
            let (tx, rx) = mpsc::channel(opts.batch_max_events.max(1) * 2);
            let Target::Fixed(url) = &sink.target else {
                unreachable!("checked above: batch mode has a fixed URL")
            };
            tokio::spawn(batch_loop(rx, Arc::clone(&sink.poster), url.clone(), opts));
            sink.batches = Some(tx);
        }
        Ok(sink)
    }

    fn url(&self, event: &Event) -> Result<Url, SinkError> {
        match &self.target {
            Target::Fixed(url) => Ok(url.clone()),
            Target::Template(template) => {
                let text = template.render(event, |_, value, out| {
                    out.extend(utf8_percent_encode(value, PATH_SEGMENT));
                });
                parse_url(&text).map_err(|m| SinkError::permanent(&self.poster.name, m))
            }
        }
    }
}

/// The host and port of a fixed URL, or of a templated URL whose placeholders all follow the
/// authority.
fn reach(url: &str, target: &Target) -> Option<(String, u16)> {
    let parsed = match target {
        Target::Fixed(url) => url.clone(),
        Target::Template(_) => {
            let prefix = &url[..url.find('{')?];
            if !prefix.split_once("://")?.1.contains('/') {
                return None;
            }
            Url::parse(prefix).ok()?
        }
    };
    let host = parsed
        .host_str()?
        .trim_start_matches('[')
        .trim_end_matches(']');
    Some((host.to_owned(), parsed.port_or_known_default()?))
}

impl Sink for HttpSink {
    fn name(&self) -> &str {
        &self.poster.name
    }

    /// A TCP connection to the receiver's host and port within 3 s (no request is made: an HTTP
    /// endpoint has no side-effect-free method every receiver supports).
    fn health(&self) -> sink_core::Checking<'_> {
        Box::pin(async move {
            let Some((host, port)) = &self.reach else {
                return Ok(());
            };
            let connect = tokio::net::TcpStream::connect((host.as_str(), *port));
            match tokio::time::timeout(std::time::Duration::from_secs(3), connect).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(SinkError::transient(
                    &self.poster.name,
                    format!("cannot connect to {host}:{port}: {e}"),
                )),
                Err(_) => Err(SinkError::transient(
                    &self.poster.name,
                    format!("cannot connect to {host}:{port}: timed out after 3s"),
                )),
            }
        })
    }

    fn key_order(&self) -> KeyOrder {
        // Requests on a connection pool overtake each other; one per run keeps runs in order.
        KeyOrder::OneInFlight
    }

    fn publish<'a>(&'a self, event: &'a Event) -> Accepting<'a> {
        Box::pin(async move {
            if let Some(batches) = &self.batches {
                let (tx, rx) = oneshot::channel();
                batches
                    .send((structured::to_vec(event), tx))
                    .await
                    .map_err(|_| {
                        SinkError::permanent(&self.poster.name, "batching task stopped")
                    })?;
                let name = self.poster.name.clone();
                return Ok(Box::pin(async move {
                    rx.await
                        .unwrap_or_else(|_| Err(SinkError::transient(&name, "batch abandoned")))
                }) as Receipt);
            }
            let url = self.url(event)?;
            let mut headers = HeaderMap::new();
            let body = match self.mode {
                Mode::Binary => {
                    for (name, value) in binary::attributes(event) {
                        let name = HeaderName::from_bytes(format!("ce-{name}").as_bytes())
                            .map_err(|_| {
                                SinkError::permanent(
                                    &self.poster.name,
                                    format!("attribute {name:?} is not a valid header name"),
                                )
                            })?;
                        let encoded = binary::percent_encode(&value);
                        // Percent-encoding leaves only printable ASCII: always a valid value.
                        if let Ok(value) = HeaderValue::from_str(&encoded) {
                            headers.insert(name, value);
                        }
                    }
                    if let Some(ct) = cloudevents::AttributesReader::datacontenttype(event)
                        && let Ok(ct) = HeaderValue::from_str(ct)
                    {
                        headers.insert(CONTENT_TYPE, ct);
                    }
                    binary::body(event)
                }
                Mode::Structured | Mode::Batch => {
                    headers.insert(
                        CONTENT_TYPE,
                        HeaderValue::from_static("application/cloudevents+json; charset=utf-8"),
                    );
                    structured::to_vec(event)
                }
            };
            Ok(Arc::clone(&self.poster).post(url, headers, body))
        })
    }
}

/// What a request needs besides its URL, headers and body.
struct Poster {
    name: String,
    client: reqwest::Client,
    headers: HeaderMap,
    token: Option<Arc<TokenFile>>,
}

impl Poster {
    fn post(self: Arc<Self>, url: Url, mut headers: HeaderMap, body: Vec<u8>) -> Receipt {
        for (k, v) in &self.headers {
            headers.append(k.clone(), v.clone());
        }
        Box::pin(async move {
            if let Some(token) = &self.token {
                let value = token
                    .authorization()
                    .map_err(|m| SinkError::transient(&self.name, m))?;
                headers.insert(reqwest::header::AUTHORIZATION, value);
            }
            let result = self
                .client
                .post(url)
                .headers(headers)
                .body(body)
                .send()
                .await;
            classify(&self.name, result).await
        })
    }
}

/// Turns a response (or its absence) into the delivery outcome.
async fn classify(
    name: &str,
    result: Result<reqwest::Response, reqwest::Error>,
) -> Result<(), SinkError> {
    let response = match result {
        Ok(response) => response,
        Err(err) => {
            let what = if err.is_timeout() {
                "request timed out"
            } else if err.is_connect() {
                "cannot connect"
            } else {
                "request failed"
            };
            let message = format!("{what}: {}", error_chain(&err));
            return Err(SinkError::transient(name, message).with_source(err));
        }
    };
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    // Read the body so the connection can be reused; quote a little of it on failure.
    let body = response.bytes().await.unwrap_or_default();
    if status.is_success() {
        return Ok(());
    }
    let excerpt = String::from_utf8_lossy(&body[..body.len().min(BODY_EXCERPT)])
        .trim()
        .to_owned();
    let message = if excerpt.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {excerpt}")
    };
    if is_retryable(status) {
        let err = SinkError::transient(name, message);
        Err(match retry_after {
            Some(delay) => err.with_retry_after(delay),
            None => err,
        })
    } else if status.is_redirection() {
        Err(SinkError::permanent(
            name,
            format!("{message} (redirects are not followed; point the sink at the final URL)"),
        ))
    } else {
        Err(SinkError::permanent(name, message))
    }
}

/// The Knative delivery table: retry 404, 408, 409, 429 and 5xx; not 410, other 4xx or 3xx.
pub fn is_retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 404 | 408 | 409 | 429) || status.is_server_error()
}

/// `Retry-After` as delta-seconds or an HTTP-date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn parse_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text)
        .map_err(|e| format!("invalid URL {:?}: {e}", redact_with(text, SHOWN_OPTIONS)))?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        other => Err(format!("unsupported scheme {other:?}; use http or https")),
    }
}

fn build_client(opts: &HttpOptions, extra_ca_pem: Option<&str>) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(opts.timeout)
        .connect_timeout(opts.connect_timeout.min(opts.timeout))
        .pool_max_idle_per_host(opts.pool_max_idle)
        .tcp_nodelay(true)
        .user_agent(concat!("kfp-event-bridge/", env!("CARGO_PKG_VERSION")));
    let mut bundles = Vec::new();
    if let Some(path) = &opts.ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("ca_file {}: {e}", path.display()))?;
        bundles.push(("ca_file", pem));
    }
    if let Some(pem) = extra_ca_pem.filter(|p| !p.trim().is_empty()) {
        bundles.push(("K_CA_CERTS", pem.as_bytes().to_vec()));
    }
    for (what, pem) in bundles {
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("{what}: not a PEM certificate bundle: {e}"))?;
        if certs.is_empty() {
            return Err(format!("{what}: no certificate found"));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    match (&opts.cert_file, &opts.key_file) {
        (Some(cert), Some(key)) => {
            let mut pem =
                std::fs::read(cert).map_err(|e| format!("cert_file {}: {e}", cert.display()))?;
            pem.push(b'\n');
            pem.extend(std::fs::read(key).map_err(|e| format!("key_file {}: {e}", key.display()))?);
            let identity = reqwest::Identity::from_pem(&pem)
                .map_err(|e| format!("cert_file/key_file: not a PEM certificate and key: {e}"))?;
            builder = builder.identity(identity);
        }
        (None, None) => {}
        _ => return Err("cert_file and key_file go together".to_owned()),
    }
    builder
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// Gathers structured events into batches and posts each, resolving every member's receipt.
async fn batch_loop(
    mut rx: mpsc::Receiver<Batched>,
    poster: Arc<Poster>,
    url: Url,
    opts: HttpOptions,
) {
    while let Some(first) = rx.recv().await {
        let mut bytes = first.0.len();
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + opts.batch_linger;
        while batch.len() < opts.batch_max_events {
            let next = match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(next)) => next,
                Ok(None) | Err(_) => break,
            };
            if bytes + next.0.len() + 1 > opts.batch_max_bytes {
                // Too big to join: send what we have, start the next batch with it.
                post_batch(&poster, &url, std::mem::take(&mut batch));
                bytes = 0;
            }
            bytes += next.0.len() + 1;
            batch.push(next);
        }
        post_batch(&poster, &url, batch);
    }
}

fn post_batch(poster: &Arc<Poster>, url: &Url, batch: Vec<Batched>) {
    if batch.is_empty() {
        return;
    }
    let mut body = Vec::with_capacity(batch.iter().map(|b| b.0.len() + 1).sum::<usize>() + 2);
    body.push(b'[');
    let mut waiters = Vec::with_capacity(batch.len());
    for (i, (json, waiter)) in batch.into_iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&json);
        waiters.push(waiter);
    }
    body.push(b']');
    let mut headers = HeaderMap::new();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/cloudevents-batch+json; charset=utf-8"),
    );
    let name = poster.name.clone();
    let receipt = Arc::clone(poster).post(url.clone(), headers, body);
    tokio::spawn(async move {
        let result = receipt.await;
        for waiter in waiters {
            let copy = match &result {
                Ok(()) => Ok(()),
                Err(err) => Err(copy_error(&name, err)),
            };
            let _ = waiter.send(copy);
        }
    });
}

/// The same classification and message for each member of a failed batch.
fn copy_error(name: &str, err: &SinkError) -> SinkError {
    let message = err.message().to_owned();
    match err {
        SinkError::Transient { retry_after, .. } => {
            let copy = SinkError::transient(name, message);
            match retry_after {
                Some(d) => copy.with_retry_after(*d),
                None => copy,
            }
        }
        SinkError::Permanent { .. } => SinkError::permanent(name, message),
        SinkError::Config { .. } => SinkError::config(name, message),
    }
}

/// Options whose values are safe to show in logs; all others are masked.
pub const SHOWN_OPTIONS: &[&str] = &[
    "mode",
    "timeout",
    "connect_timeout",
    "batch_max_events",
    "batch_max_bytes",
    "batch_linger",
    "pool_max_idle",
];

/// The HTTP (CloudEvents HTTP binding) sink for the bridge's sink registry.
pub struct Factory;

impl sink_core::SinkFactory for Factory {
    fn schemes(&self) -> &'static [&'static str] {
        &["http", "https"]
    }

    fn shown_options(&self) -> &'static [&'static str] {
        SHOWN_OPTIONS
    }

    fn open<'a>(&'a self, config: sink_core::SinkConfig<'a>) -> sink_core::Opening<'a> {
        Box::pin(async move {
            // Extra trust roots, as Knative's SinkBinding hands them over.
            let ca = std::env::var("K_CA_CERTS").ok();
            let sink = HttpSink::open(config.uri, config.name, config.options, ca.as_deref())?;
            Ok(std::sync::Arc::new(sink) as std::sync::Arc<dyn Sink>)
        })
    }

    fn describe(
        &self,
        config: sink_core::SinkConfig<'_>,
    ) -> Result<Option<sink_core::Description>, SinkError> {
        let display = config.display(SHOWN_OPTIONS);
        let err = |message: String| SinkError::config(&display, message);
        let mut opts = HttpOptions::default();
        let url = match config.options {
            Some(pairs) => {
                for (key, value) in pairs {
                    if !opts.set(key, value).map_err(&err)? {
                        return Err(err(format!("unknown option {key:?}")));
                    }
                }
                config.uri.to_owned()
            }
            None => opts.take_from_query(config.uri).map_err(&err)?,
        };
        let template = Template::parse(&url).map_err(|e| err(e.to_string()))?;
        if template.is_constant() {
            parse_url(&url).map_err(&err)?;
        } else {
            parse_url(&template.render_sample(|_, _, out| out.push('x'))).map_err(&err)?;
            if opts.mode == Mode::Batch {
                return Err(err(
                    "batch mode needs a fixed URL (no {…} template)".to_owned()
                ));
            }
        }
        let (scheme, rest) = url.split_once("://").unwrap_or(("http", &url));
        let (authority, path) = match rest.find(['/', '?']) {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        // The endpoint's own query may hold a secret (`?code=…`): the path only; the server's
        // description shows the URI redacted.
        let path = path.split(['?', '#']).next().unwrap_or_default();
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        Ok(Some(sink_core::Description {
            protocol: scheme.to_owned(),
            host: host.to_owned(),
            address: if path.starts_with('/') {
                path.to_owned()
            } else {
                format!("/{path}")
            },
            mode: match opts.mode {
                Mode::Binary => sink_core::ContentMode::Binary,
                Mode::Structured => sink_core::ContentMode::Structured,
                Mode::Batch => sink_core::ContentMode::Batch,
            },
            summary: "POST per event (batch mode: per array); 2xx delivers; 404, 408, 409, 429, \
                      5xx and network errors are retried (Retry-After honoured); 410 and other \
                      4xx are refused for good"
                .into(),
            header_prefix: "ce-".into(),
            channel_binding: None,
            operation_binding: Some(
                serde_json::json!({"method": "POST", "bindingVersion": "0.3.0"}),
            ),
            message_binding: None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes_follow_the_knative_table() {
        for (code, retry) in [
            (404, true),
            (408, true),
            (409, true),
            (429, true),
            (500, true),
            (503, true),
            (400, false),
            (401, false),
            (403, false),
            (410, false),
            (413, false),
            (301, false),
        ] {
            assert_eq!(
                is_retryable(StatusCode::from_u16(code).expect("status")),
                retry,
                "{code}"
            );
        }
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        let later = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        let wait = parse_retry_after(&later).expect("date");
        assert!(wait > Duration::from_secs(25) && wait <= Duration::from_secs(30));
        assert_eq!(parse_retry_after("soon"), None);
    }
}

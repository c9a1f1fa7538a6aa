//! The plugin contract: a [`SinkFactory`] says which URIs it opens, which of its options are safe
//! to show in logs, and opens a sink; a [`Registry`] holds the factories a build has. A new sink is
//! a crate with a factory, registered in one table (the bridge's `sinks.rs`) or, from a program or
//! a test, with [`Registry::register`] — no other sink, and nothing in this crate, changes.

use crate::{JsonLinesSink, Sink, SinkError, uri};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

/// What opening one sink is given: its URI (the bridge's own query parameters taken out), the
/// display name the user chose, and options given apart from the URI (a config file's `options:`).
#[derive(Debug, Clone, Copy)]
pub struct SinkConfig<'a> {
    pub uri: &'a str,
    pub name: Option<&'a str>,
    pub options: Option<&'a [(String, String)]>,
}

impl SinkConfig<'_> {
    /// The name for logs and metrics: the chosen one, else the URI with `shown` options visible
    /// and everything else that could be a secret masked.
    pub fn display(&self, shown: &[&str]) -> String {
        self.name
            .map_or_else(|| uri::redact_with(self.uri, shown), str::to_owned)
    }
}

/// How a sink carries a CloudEvent (the CloudEvents protocol bindings' content modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentMode {
    /// Attributes in headers (with [`Description::header_prefix`]), the data as the body.
    Binary,
    /// The whole event as `application/cloudevents+json`.
    Structured,
    /// Several events in one `application/cloudevents-batch+json` array (HTTP).
    Batch,
}

/// What a sink publishes, as a description of the interface (an AsyncAPI document) needs it: the
/// server, the destination as a template, the content mode and the protocol's binding objects.
/// Made from the options `open` reads, without connecting or reading secret files.
#[derive(Debug, Clone, PartialEq)]
pub struct Description {
    /// The protocol as AsyncAPI names it: `kafka`, `nats`, `amqp`, `amqps`, `http`, `https`.
    pub protocol: String,
    /// `HOST[:PORT]` of the (first) server; never credentials.
    pub host: String,
    /// The destination template: a topic, subject, routing key or URL path, with `{namespace}`,
    /// `{type}`… as the sink renders them.
    pub address: String,
    pub mode: ContentMode,
    /// How the protocol is used, in a sentence (acknowledgements, delivery guarantee).
    pub summary: String,
    /// Prefix of the attribute headers in binary mode (`ce_`, `ce-`).
    pub header_prefix: String,
    /// AsyncAPI binding objects of the protocol (each with its `bindingVersion`), where it
    /// defines them: for the channel, the operation and the message.
    pub channel_binding: Option<serde_json::Value>,
    pub operation_binding: Option<serde_json::Value>,
    pub message_binding: Option<serde_json::Value>,
}

/// A future that resolves with an opened sink.
pub type Opening<'a> = Pin<Box<dyn Future<Output = Result<Arc<dyn Sink>, SinkError>> + Send + 'a>>;

/// One kind of sink.
pub trait SinkFactory: Send + Sync {
    /// The URI schemes it opens (`amqp`, `amqps`), without `:`. A scheme is owned by one factory.
    fn schemes(&self) -> &'static [&'static str];

    /// Options (query parameters or `options:` keys) whose values are safe to show in logs; the
    /// values of all others are masked. The router's own parameters are always shown.
    fn shown_options(&self) -> &'static [&'static str] {
        &[]
    }

    /// Opens a sink: parses and checks the options (an unknown one is a [`SinkError::Config`]),
    /// and may connect and check the far side before returning.
    fn open<'a>(&'a self, config: SinkConfig<'a>) -> Opening<'a>;

    /// What the sink would publish, for an interface description; `Ok(None)` when it publishes
    /// to no message channel (standard output, a file) or does not say.
    fn describe(&self, _config: SinkConfig<'_>) -> Result<Option<Description>, SinkError> {
        Ok(None)
    }
}

/// The sinks a build knows, by scheme.
#[derive(Default)]
pub struct Registry {
    factories: Vec<Arc<dyn SinkFactory>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a factory. A scheme already registered is taken over by the new factory (a program
    /// may replace a built-in sink).
    pub fn register(&mut self, factory: impl SinkFactory + 'static) -> &mut Self {
        self.factories.push(Arc::new(factory));
        self
    }

    /// The factory for `uri`'s scheme (`stdout` and `-` are schemes of their own): the latest
    /// registered that has it.
    pub fn factory(&self, uri: &str) -> Option<&dyn SinkFactory> {
        let scheme = scheme(uri);
        self.factories
            .iter()
            .rev()
            .find(|f| f.schemes().contains(&scheme))
            .map(AsRef::as_ref)
    }

    /// Every scheme once, in registration order (for messages that list them).
    pub fn schemes(&self) -> Vec<&'static str> {
        let mut all: Vec<&'static str> = Vec::new();
        for scheme in self
            .factories
            .iter()
            .flat_map(|f| f.schemes().iter().copied())
        {
            if !all.contains(&scheme) {
                all.push(scheme);
            }
        }
        all
    }

    /// `uri` fit for logs, with the options its sink shows (see [`uri::redact_with`]).
    pub fn redact(&self, uri: &str) -> String {
        let shown = self.factory(uri).map_or(&[][..], |f| f.shown_options());
        uri::redact_with(uri, shown)
    }

    /// Opens the sink `config.uri` names.
    pub async fn open(&self, config: SinkConfig<'_>) -> Result<Arc<dyn Sink>, SinkError> {
        match self.factory(config.uri) {
            Some(factory) => factory.open(config).await,
            None => Err(SinkError::config(
                &config
                    .name
                    .map_or_else(|| self.redact(config.uri), str::to_owned),
                format!(
                    "unsupported sink {:?}; this build has: {}",
                    scheme(config.uri),
                    self.schemes()
                        .iter()
                        .filter(|s| **s != "-")
                        .map(|s| match *s {
                            "stdout" => (*s).to_owned(),
                            "file" => "file:PATH".to_owned(),
                            s => format!("{s}://"),
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }
}

/// The scheme of a sink URI: what comes before the first `:` (`stdout` for `stdout`).
pub fn scheme(uri: &str) -> &str {
    uri.split_once(':').map_or(uri, |(scheme, _)| scheme)
}

/// `stdout` (or `-`) and `file:PATH`: structured JSON lines, no options.
pub struct JsonLinesFactory;

impl SinkFactory for JsonLinesFactory {
    fn schemes(&self) -> &'static [&'static str] {
        &["stdout", "-", "file"]
    }

    fn open<'a>(&'a self, config: SinkConfig<'a>) -> Opening<'a> {
        Box::pin(async move {
            let uri = config.uri;
            if let Some((key, _)) = config.options.and_then(|o| o.first()) {
                return Err(SinkError::config(
                    &config.display(&[]),
                    format!("unknown option {key:?}: stdout and file sinks take none"),
                ));
            }
            if uri == "stdout" || uri == "-" {
                return Ok(Arc::new(JsonLinesSink::stdout()?) as Arc<dyn Sink>);
            }
            let path = uri
                .strip_prefix("file://")
                .or_else(|| uri.strip_prefix("file:"))
                .unwrap_or_default();
            if path.is_empty() {
                return Err(SinkError::config(uri, "file sink needs a path: file:PATH"));
            }
            Ok(Arc::new(JsonLinesSink::file(Path::new(path))?) as Arc<dyn Sink>)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake(&'static [&'static str]);

    impl SinkFactory for Fake {
        fn schemes(&self) -> &'static [&'static str] {
            self.0
        }
        fn shown_options(&self) -> &'static [&'static str] {
            &["topic"]
        }
        fn open<'a>(&'a self, config: SinkConfig<'a>) -> Opening<'a> {
            Box::pin(async move { Err(SinkError::config(config.uri, "fake")) })
        }
    }

    #[test]
    fn factories_are_found_by_scheme_and_show_their_own_options() {
        let mut registry = Registry::new();
        registry
            .register(JsonLinesFactory)
            .register(Fake(&["mq", "mqs"]));
        assert!(registry.factory("mq://h/x").is_some());
        assert!(registry.factory("stdout").is_some());
        assert!(registry.factory("file:/tmp/x").is_some());
        assert!(registry.factory("pulsar://h").is_none());
        assert_eq!(
            registry.redact("mq://u:p@h/x?topic=t&secret=s&types=run.*"),
            "mq://***@h/x?topic=t&secret=***&types=run.*"
        );
        // Another sink's options are not shown.
        assert_eq!(registry.redact("file:/x?topic=t"), "file:/x?topic=***");
        // A scheme taken over: the newer factory opens it, the older keeps its others.
        registry.register(Fake(&["mqs"]));
        assert_eq!(registry.schemes(), ["stdout", "-", "file", "mq", "mqs"]);
        let newest = registry.factory("mqs://h").expect("mqs");
        assert!(std::ptr::addr_eq(newest, registry.factories[2].as_ref()));
    }

    #[tokio::test]
    async fn an_unknown_scheme_names_what_the_build_has() {
        let mut registry = Registry::new();
        registry.register(JsonLinesFactory).register(Fake(&["mq"]));
        let config = SinkConfig {
            uri: "pulsar://u:p@h",
            name: None,
            options: None,
        };
        let err = registry.open(config).await.err().expect("unsupported");
        let text = err.to_string();
        assert!(
            text.contains("\"pulsar\"") && text.contains("stdout, file:PATH, mq://"),
            "{text}"
        );
        assert!(!text.contains("u:p"), "{text}");
    }
}

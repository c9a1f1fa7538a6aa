//! The sinks this build has: one registry table of sink factories. Each transport lives in its
//! own crate under `sinks/` behind a cargo feature of the same name; stdout and file are always
//! there. A program that embeds the bridge may [`register`](sink_core::Registry::register) more.

use sink_core::{Registry, Sink, SinkConfig, SinkError};
use std::sync::{Arc, OnceLock};

/// The built-in factories, in the order error messages list their schemes.
pub fn builtin() -> Registry {
    let mut registry = Registry::new();
    registry.register(sink_core::JsonLinesFactory);
    #[cfg(feature = "http")]
    registry.register(sink_http::Factory);
    #[cfg(feature = "kafka")]
    registry.register(sink_kafka::Factory);
    #[cfg(feature = "nats")]
    registry.register(sink_nats::Factory);
    #[cfg(feature = "amqp")]
    registry.register(sink_amqp::Factory);
    registry
}

/// The built-in registry, made once.
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(builtin)
}

/// Opens the sink `config` names with the built-in sinks: `stdout`, `file:PATH` (appends JSON
/// lines), `http(s)://…`, `kafka://…`, `nats://…` (connects and checks streams before
/// returning), `amqp(s)://…` (connects and checks the exchange before returning).
pub async fn open(config: SinkConfig<'_>) -> Result<Arc<dyn Sink>, SinkError> {
    registry().open(config).await
}

/// A sink URI fit for logs: user-info masked, and every query value but the router's and its
/// sink's harmless options.
pub fn redact(uri: &str) -> String {
    registry().redact(uri)
}

#[cfg(all(test, feature = "http", feature = "amqp"))]
mod tests {
    use super::redact;

    #[test]
    fn redacts_user_info_and_unknown_query_values() {
        assert_eq!(
            redact("amqp://user:secret@rabbit:5672/%2f?exchange=kfp&password=x@b"),
            "amqp://***@rabbit:5672/%2f?exchange=kfp&password=***"
        );
        assert_eq!(
            redact("https://hooks.example/kfp?mode=structured&code=s3cr3t&types=run.*"),
            "https://hooks.example/kfp?mode=structured&code=***&types=run.*"
        );
        assert_eq!(
            redact("https://hooks.example/kfp"),
            "https://hooks.example/kfp"
        );
        assert_eq!(redact("file:/tmp/a@b"), "file:/tmp/a@b");
        assert_eq!(
            redact("https://h/?header=Authorization:%20Bearer%20x"),
            "https://h/?header=***"
        );
        // Options are shown for their own sink only.
        assert_eq!(redact("https://h/?exchange=kfp"), "https://h/?exchange=***");
    }
}

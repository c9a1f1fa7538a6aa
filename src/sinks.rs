//! Sink URIs from the command line → sinks. Each transport lives in its own crate under `sinks/`;
//! this is the one place that knows them all.

use crate::route::SinkSpec;
use sink_core::{JsonLinesSink, Sink, SinkError};
use std::path::Path;
use std::sync::Arc;

/// Opens the sink a spec names: `stdout`, `file:PATH` (appends JSON lines), `http(s)://…`,
/// `nats://…` (connects and checks streams before returning), `amqp(s)://…` (connects and checks
/// the exchange before returning).
pub async fn open(spec: &SinkSpec) -> Result<Arc<dyn Sink>, SinkError> {
    let uri = spec.uri.as_str();
    let display = spec.name.clone().unwrap_or_else(|| redact(uri));
    if uri.starts_with("amqp://") || uri.starts_with("amqps://") {
        return Ok(Arc::new(
            sink_amqp::AmqpSink::open(uri, spec.name.as_deref(), spec.options.as_deref()).await?,
        ));
    }
    if uri.starts_with("kafka://") {
        return Ok(Arc::new(
            sink_kafka::KafkaSink::open(uri, spec.name.as_deref(), spec.options.as_deref()).await?,
        ));
    }
    if uri.starts_with("nats://") || uri.starts_with("tls://") {
        return Ok(Arc::new(
            sink_nats::NatsSink::open(uri, spec.name.as_deref(), spec.options.as_deref()).await?,
        ));
    }
    if uri.starts_with("http://") || uri.starts_with("https://") {
        let ca = std::env::var("K_CA_CERTS").ok();
        return Ok(Arc::new(sink_http::HttpSink::open(
            uri,
            spec.name.as_deref(),
            spec.options.as_deref(),
            ca.as_deref(),
        )?));
    }
    if let Some((key, _)) = spec.options.as_deref().and_then(|o| o.first()) {
        return Err(SinkError::config(
            &display,
            format!("unknown option {key:?}: stdout and file sinks take none"),
        ));
    }
    if uri == "stdout" || uri == "-" {
        return Ok(Arc::new(JsonLinesSink::stdout()?));
    }
    if let Some(path) = uri
        .strip_prefix("file://")
        .or_else(|| uri.strip_prefix("file:"))
    {
        if path.is_empty() {
            return Err(SinkError::config(uri, "file sink needs a path: file:PATH"));
        }
        return Ok(Arc::new(JsonLinesSink::file(Path::new(path))?));
    }
    let scheme = uri.split(':').next().unwrap_or(uri);
    Err(SinkError::config(
        &display,
        format!(
            "unsupported sink {scheme:?}; this build has: stdout, file:PATH, http://, https://, kafka://, nats://, tls://, amqp://, amqps://"
        ),
    ))
}

pub use sink_core::redact;

#[cfg(test)]
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
    }
}

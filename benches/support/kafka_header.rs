//! A Kafka record's header by name, for the benchmarks that read binary-mode CloudEvents.

use rdkafka::message::{Headers, Message};

/// The value of the first header called `name`, if the record has one with a value.
pub fn bytes<'a, M: Message>(message: &'a M, name: &str) -> Option<&'a [u8]> {
    message.headers()?.iter().find(|h| h.key == name)?.value
}

/// The same as text (lossy).
pub fn text<M: Message>(message: &M, name: &str) -> Option<String> {
    bytes(message, name).map(|v| String::from_utf8_lossy(v).into_owned())
}

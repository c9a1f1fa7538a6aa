//! Binary content mode, transport-neutral: the attributes as (name, canonical string) pairs and the
//! data as the message body. Each transport adds its own prefix (`ce-`, `ce_`) and escaping.

use cloudevents::event::{Data, ExtensionValue};
use cloudevents::{AttributesReader, Event};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use std::borrow::Cow;

/// Characters the HTTP binding (and the NATS binding draft, which follows it) requires to be
/// percent-encoded in header values, besides every byte outside printable ASCII.
const HEADER_VALUE: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'%');

/// A header value encoded per the HTTP binding §3.1.3.2: space, `"`, `%` and everything outside
/// printable ASCII become `%XX` (UTF-8 bytes, upper-case hex). The result is printable ASCII.
pub fn percent_encode(value: &str) -> Cow<'_, str> {
    utf8_percent_encode(value, HEADER_VALUE).into()
}

/// Every attribute except `datacontenttype` (which travels as the transport's content type) and
/// `data`, in spec order then extensions sorted by name, each in its canonical string form.
pub fn attributes(event: &Event) -> Vec<(&str, Cow<'_, str>)> {
    let mut out: Vec<(&str, Cow<'_, str>)> = Vec::with_capacity(12);
    let specversion = match event.specversion() {
        cloudevents::event::SpecVersion::V03 => "0.3",
        cloudevents::event::SpecVersion::V10 => "1.0",
    };
    out.push(("specversion", Cow::Borrowed(specversion)));
    out.push(("id", Cow::Borrowed(event.id())));
    out.push(("source", Cow::Borrowed(event.source().as_str())));
    out.push(("type", Cow::Borrowed(event.ty())));
    if let Some(schema) = event.dataschema() {
        out.push(("dataschema", Cow::Borrowed(schema.as_str())));
    }
    if let Some(subject) = event.subject() {
        out.push(("subject", Cow::Borrowed(subject)));
    }
    if let Some(time) = event.time() {
        out.push((
            "time",
            Cow::Owned(time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
        ));
    }
    let mut extensions: Vec<_> = event.iter_extensions().collect();
    extensions.sort_unstable_by_key(|(name, _)| *name);
    for (name, value) in extensions {
        let value = match value {
            ExtensionValue::String(s) => Cow::Borrowed(s.as_str()),
            ExtensionValue::Boolean(b) => Cow::Owned(b.to_string()),
            ExtensionValue::Integer(i) => Cow::Owned(i.to_string()),
        };
        out.push((name, value));
    }
    out
}

/// The message body in binary mode: the data as-is (JSON serialized compactly).
pub fn body(event: &Event) -> Vec<u8> {
    match event.data() {
        Some(Data::Json(value)) => serde_json::to_vec(value).unwrap_or_default(),
        Some(Data::String(s)) => s.as_bytes().to_vec(),
        Some(Data::Binary(bytes)) => bytes.clone(),
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_are_percent_encoded_per_the_binding() {
        assert_eq!(
            percent_encode("Euro € 😀"),
            "Euro%20%E2%82%AC%20%F0%9F%98%80"
        );
        assert_eq!(percent_encode("100%"), "100%25");
        assert_eq!(percent_encode("say \"hi\""), "say%20%22hi%22");
        assert_eq!(percent_encode("already%20"), "already%2520");
        assert_eq!(percent_encode("a/b:c;d=e"), "a/b:c;d=e");
        assert_eq!(percent_encode("tab\there"), "tab%09here");
    }
    use cloudevents::{EventBuilder, EventBuilderV10};

    #[test]
    fn time_matches_the_structured_form() {
        let time = chrono::DateTime::parse_from_rfc3339("2024-05-01T10:00:00.250Z")
            .expect("time")
            .with_timezone(&chrono::Utc);
        let event = EventBuilderV10::new()
            .id("1")
            .source("/s")
            .ty("t")
            .time(time)
            .extension("b", "2")
            .extension("a", "1")
            .build()
            .expect("event");
        let attrs = attributes(&event);
        let names: Vec<_> = attrs.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            ["specversion", "id", "source", "type", "time", "a", "b"]
        );
        let structured = String::from_utf8(crate::structured::to_vec(&event)).expect("utf8");
        assert!(structured.contains(&format!("\"time\":\"{}\"", attrs[4].1)));
    }
}

//! The CloudEvents JSON event format (structured mode), written deterministically.
//!
//! The SDK keeps extensions in a `HashMap`, so its serializer emits them in a random order. Here
//! attributes come in spec order and extensions sorted by name, so the same event always gives the
//! same bytes (golden files, de-duplicating consumers and diffing people rely on that).

use base64::Engine as _;
use cloudevents::event::{Data, ExtensionValue};
use cloudevents::{AttributesReader, Event};
use std::io::Write;

/// Media type of one structured event.
pub const CONTENT_TYPE: &str = "application/cloudevents+json";
/// Media type of a JSON batch of structured events.
pub const BATCH_CONTENT_TYPE: &str = "application/cloudevents-batch+json";

/// Appends `event` as one JSON object (no trailing newline) to `out`.
pub fn write_event(out: &mut Vec<u8>, event: &Event) {
    out.push(b'{');
    member(out, "specversion", event.specversion().as_str(), true);
    member(out, "id", event.id(), false);
    member(out, "source", event.source().as_str(), false);
    member(out, "type", event.ty(), false);
    if let Some(ct) = event.datacontenttype() {
        member(out, "datacontenttype", ct, false);
    }
    if let Some(schema) = event.dataschema() {
        member(out, "dataschema", schema.as_str(), false);
    }
    if let Some(subject) = event.subject() {
        member(out, "subject", subject, false);
    }
    if let Some(time) = event.time() {
        key(out, "time", false);
        json(out, time);
    }
    let mut extensions: Vec<_> = event.iter_extensions().collect();
    extensions.sort_unstable_by_key(|(name, _)| *name);
    for (name, value) in extensions {
        key(out, name, false);
        match value {
            ExtensionValue::String(s) => json(out, s),
            ExtensionValue::Boolean(b) => json(out, b),
            ExtensionValue::Integer(i) => json(out, i),
        }
    }
    match event.data() {
        Some(Data::Json(value)) => {
            key(out, "data", false);
            json(out, value);
        }
        Some(Data::String(s)) => {
            key(out, "data", false);
            json(out, s);
        }
        // JSON the bridge serialized once (or read as JSON): written as it is, for every sink.
        Some(Data::Binary(bytes)) if is_json(event.datacontenttype()) => {
            key(out, "data", false);
            out.extend_from_slice(bytes);
        }
        Some(Data::Binary(bytes)) => {
            key(out, "data_base64", false);
            json(
                out,
                &base64::engine::general_purpose::STANDARD.encode(bytes),
            );
        }
        None => {}
    }
    out.push(b'}');
}

/// Whether a `datacontenttype` declares JSON (`application/json`, `text/json`, `…+json`,
/// parameters ignored), so that the data is a JSON value in the event format.
///
/// The bridge's events keep JSON data as the serialized bytes (`Data::Binary` with such a
/// content type), so each sink copies them instead of serializing a tree again; whatever makes
/// events (encoding, `resend`) must put only valid JSON there.
pub fn is_json(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else {
        return false;
    };
    let media = ct.split(';').next().unwrap_or("").trim();
    media.eq_ignore_ascii_case("application/json")
        || media.eq_ignore_ascii_case("text/json")
        || media
            .get(media.len().saturating_sub(5)..)
            .is_some_and(|suffix| suffix.eq_ignore_ascii_case("+json"))
}

/// One event as a structured-mode message body.
pub fn to_vec(event: &Event) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    write_event(&mut out, event);
    out
}

/// Several events as a JSON batch (`application/cloudevents-batch+json`).
pub fn batch_to_vec<'a>(events: impl IntoIterator<Item = &'a Event>) -> Vec<u8> {
    let mut out = Vec::with_capacity(4096);
    out.push(b'[');
    for (i, event) in events.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_event(&mut out, event);
    }
    out.push(b']');
    out
}

fn key(out: &mut Vec<u8>, name: &str, first: bool) {
    if !first {
        out.push(b',');
    }
    json(out, name);
    out.push(b':');
}

fn member(out: &mut Vec<u8>, name: &str, value: &str, first: bool) {
    key(out, name, first);
    json(out, value);
}

fn json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Writing into a Vec cannot fail, and these values (strings, numbers, timestamps, JSON
    // values) always serialize; an error here would be a bug in serde_json, not bad input.
    let _ = serde_json::to_writer(&mut *out, value);
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudevents::{EventBuilder, EventBuilderV10};

    fn event() -> Event {
        EventBuilderV10::new()
            .id("1")
            .source("/s")
            .ty("t")
            .subject("a \"quoted\" subject")
            .extension("zeta", "z")
            .extension("alpha", "a")
            .extension("count", 3i64)
            .data("application/json", serde_json::json!({"k": [1, 2]}))
            .build()
            .expect("valid event")
    }

    #[test]
    fn attributes_in_spec_order_and_extensions_sorted() {
        let text = String::from_utf8(to_vec(&event())).expect("utf-8");
        assert_eq!(
            text,
            r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"application/json","subject":"a \"quoted\" subject","alpha":"a","count":3,"zeta":"z","data":{"k":[1,2]}}"#
        );
    }

    #[test]
    fn same_event_same_bytes_and_valid_json() {
        let a = to_vec(&event());
        let b = to_vec(&event());
        assert_eq!(a, b);
        let parsed: serde_json::Value = serde_json::from_slice(&a).expect("json");
        assert_eq!(parsed["data"]["k"][1], 2);
    }

    #[test]
    fn binary_data_goes_to_data_base64_only() {
        let ev = EventBuilderV10::new()
            .id("1")
            .source("/s")
            .ty("t")
            .data("application/octet-stream", vec![0u8, 255])
            .build()
            .expect("valid event");
        let parsed: serde_json::Value = serde_json::from_slice(&to_vec(&ev)).expect("json");
        assert_eq!(parsed["data_base64"], "AP8=");
        assert!(parsed.get("data").is_none());
    }

    #[test]
    fn json_bytes_are_written_as_json_and_other_bytes_as_base64() {
        let with = |ct: &str| {
            let ev = EventBuilderV10::new()
                .id("1")
                .source("/s")
                .ty("t")
                .data(ct, br#"{"k":[1,"\u00e9"]}"#.to_vec())
                .build()
                .expect("valid event");
            serde_json::from_slice::<serde_json::Value>(&to_vec(&ev)).expect("json")
        };
        for ct in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "text/json",
            "application/vnd.kfp+json",
        ] {
            let parsed = with(ct);
            assert_eq!(parsed["data"]["k"][1], "é", "{ct}");
            assert!(parsed.get("data_base64").is_none(), "{ct}");
        }
        let parsed = with("application/octet-stream");
        assert!(parsed.get("data").is_none());
        assert!(parsed["data_base64"].is_string());
        assert!(!is_json(None) && !is_json(Some("json")) && !is_json(Some("text/plain")));
    }

    #[test]
    fn batch_is_an_array() {
        let ev = event();
        let parsed: serde_json::Value =
            serde_json::from_slice(&batch_to_vec([&ev, &ev])).expect("json");
        assert_eq!(parsed.as_array().map(Vec::len), Some(2));
    }
}
